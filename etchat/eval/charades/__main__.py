from etchat.eval.charades.metrics import main

main()
