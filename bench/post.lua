-- wrk script: POST /api/messages as the benchmark user (cookie passed in COOKIE).
wrk.method = "POST"
wrk.body = '{"text":"benchmark message with a few words to index 안녕하세요"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cookie"] = os.getenv("COOKIE")
