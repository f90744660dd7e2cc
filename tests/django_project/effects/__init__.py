"""The project's app: the rows its webhook handlers write."""
