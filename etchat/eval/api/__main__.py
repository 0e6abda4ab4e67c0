from etchat.eval.api.run import main

main()
