-- wrk script: every request is the same ~400-byte OpenAI chat-completion POST.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"phi-3-mini-4k-instruct","messages":[{"role":"system","content":"You tag short messages. Answer with JSON only: {\\"mood\\": one of happy, sad, neutral, \\"celebrate\\": true or false}."},{"role":"user","content":"We shipped the release tonight and every test passed on the first try!"}],"max_tokens":32,"user":"bench","temperature":0,"stream":false,"response_format":{"type":"json_object"}}'
