"""Jobs: the line a visitor waits in at the peak. What a job is, its fair order and what every
store promises (model.py), the embedded store (store_sqlite.py) and a fleet's (store_redis.py),
the runner that runs jobs through the pipeline /toonify calls (runner.py), and the webhook a
job's end is told to. The HTTP routes are the entry's (toonify/edge/job_desk.py)."""
