"""The delivery service: queue consumer, alias expansion, local and remote delivery, retries and bounces."""
