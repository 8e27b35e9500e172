"""Code every Postroom service shares: settings, logging, envelope, AMQP topology, connections, health."""
