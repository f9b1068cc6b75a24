"""The ingress: verifies source webhooks on their raw bytes and publishes them, untouched, to Kafka.

It answers 202 only after the broker acknowledged the write, keeps no state of its own and
scales horizontally. Bad requests get RFC 9457 problem+json and never reach Kafka.
"""
