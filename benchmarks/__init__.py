"""The benchmark harness: how much latency, CPU and memory the proxy adds, and how it streams.

Run ``python -m benchmarks.run`` (see benchmarks/README.md).  Nothing here is
imported by the proxy or by the test suite; the modules are:

* `payloads`: the fixed request and response bodies and the fake's SSE events;
* `fake_sse`: the fake upstream for streams (and for plain JSON when nginx is missing);
* `stream_client`: a lean client measuring first-event time, chunk lag and reads;
* `load`: wrk (or a Python fallback) driving keep-alive POST load;
* `procs`: starting, pinning, measuring (/proc) and always killing child processes;
* `scenarios`: what each scenario configures and measures;
* `report`: medians and the Markdown/JSON output;
* `run`: the command line that ties them together.
"""
