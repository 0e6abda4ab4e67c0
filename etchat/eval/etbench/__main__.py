from etchat.eval.etbench.compute_metrics import main

main()
