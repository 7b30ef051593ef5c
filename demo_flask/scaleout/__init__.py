"""Scaling the demo out, run for real: Redis failover drills, hosts behind a balancer.

- :mod:`.load`: a bounded, threaded HTTP load that records every answer;
- :mod:`.drills`: Sentinel and Cluster failover under load, with the figures
  (the window of failed requests, the time until every worker writes to the new
  master, billing exact);
- :mod:`.netns`: hosts as network namespaces (root only);
- :mod:`.balancer`: HAProxy in front of the hosts, health-checking ``/health``;
- :mod:`.hosts`: the demo on several hosts, one shared Redis, the host drill;
- ``python -m demo_flask --cluster`` (:mod:`demo_flask.scaleout.launch`) brings
  it all up to look at.

The tests (``tests/test_scaleout_*.py``) and ``python -m benchmarks.bm_scaleout``
run the same drills.
"""
