from etchat.eval.report.cli import main

main()
