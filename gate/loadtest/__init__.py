"""Load testing the site: the Locust personas, the runner and the invariant audit."""
