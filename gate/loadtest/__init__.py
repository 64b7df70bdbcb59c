"""Load testing the site: the Locust personas and the runner; the invariant audit is gate.audit."""
