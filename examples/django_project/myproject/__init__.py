"""A Django project that receives careCycle webhooks (the Django guide's)."""
