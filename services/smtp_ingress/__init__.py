"""The SMTP ingress: MX, submission and implicit-TLS listeners that queue accepted mail on RabbitMQ."""
