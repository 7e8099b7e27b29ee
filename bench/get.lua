-- wrk script: GET /api/messages (first page of 20) as the benchmark user.
wrk.method = "GET"
wrk.headers["Cookie"] = os.getenv("COOKIE")
