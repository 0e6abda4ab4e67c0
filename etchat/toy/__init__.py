"""The toy world the quickstart and the tests run in, apart from the real data flow: a synthetic time-sensitive data
set (`synthetic`), tiny base weights in the published formats (`tiny`) with a tiny tokenizer (`tokenizer`), synthetic
E.T. Bench prediction files (`predictions`) and reference baselines (`baselines`)."""
