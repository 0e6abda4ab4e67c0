from etchat.eval.qvhighlights.evaluate import main

main()
