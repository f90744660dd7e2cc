"""A Django app of the tests: the rows that handlers write (the delivery's effects)."""
