-- A streamed chat completion: the bench upstream answers it with 24 content
-- chunks, a usage chunk and [DONE] (loom-bench-upstream's EVENTS default).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! Can you tell me what the weather is usually like in Lisbon in May?"}],"temperature":0.2,"max_tokens":200}'
