"""What mail clients and DNS need to find Postroom: autoconfig and autodiscover documents, and the domain's records."""
