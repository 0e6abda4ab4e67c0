from etchat.eval.dvc.evaluate import main

main()
