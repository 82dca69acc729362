"""Jobs: the line a visitor waits in at the peak. What a job is and what every store promises
(model.py), the embedded store (store_sqlite.py) and a fleet's (store_redis.py), and the webhook
a job's end is told to. The HTTP routes and the runner that hands jobs to the service are the
entry's (toonify/edge/job_desk.py, job_runner.py)."""
