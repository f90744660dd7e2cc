"""A Django project that receives careCycle webhooks: the layout the Django guide describes."""
