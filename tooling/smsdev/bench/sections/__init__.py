"""The bench's sections, one module each, run in this order by the CLI (--only picks):
ort (and metrics), ready, throughput, shadow, oip, overload. Each measures, checks what it
measured and adds its part to the session's result."""
