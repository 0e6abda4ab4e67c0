"""Any OpenAI-compatible chat endpoint (a hosted API, vLLM's server) on the project's benchmarks:
``python -m etchat.eval.api`` (`run`), the messages each model family gets (`protocol`), what is shown of a video
(`frames`), and the requests with retries and a rate limit (`client`). docs/design.md §19."""
