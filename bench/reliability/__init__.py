"""Reliability under load, faults and restarts: the real server (gunicorn + uvicorn workers) on
127.0.0.1 with the Gemini-compatible stub as a separate process, driven by bounded asyncio
clients that account for every request (a closed or reset connection is a failed request).

One module per scenario, each bounded in time and count:
  rolling_restart  50 clients for 30 s; SIGHUP to the master twice, SIGTERM to one worker
  drain            SIGTERM to the master under load: readiness, in-flight requests, exit
  recycle          MAX_REQUESTS under load: workers replaced through the drain, nothing lost
  worker_kill      SIGKILL one worker under load: requests lost, time until capacity is back
  overload         10x the configured capacity: 503 + Retry-After, bounded p99 and memory, recovery
  soak             20,000 requests: RSS, threads and open files per worker (slopes)
  upstream_faults  stub faults at 10%, 30%, 100%: findings in every row, fallbacks counted; strict
  loop_faults      loop errors on the first, two, every attempt: retried or a clear error
  blocked_loop     a coroutine blocks the executor loop: lag metric, WARNING, /health/live, 504
  bad_input        tests/service/test_bad_input.py against the real server, and what it tried

Shared by them: ``processes`` (the stub and the server launcher), ``load`` (the load generator
and clients), ``report`` (a scenario's result and the Markdown report); ``runner`` runs them and
writes bench/results/reliability.md, exiting 1 when a target is missed.

    python -m bench.reliability [--only NAME ...] [--quick] [--output PATH]
"""
