"""fleet: deploy containerized apps to mixed-architecture IoT fleets.

Data flows one way through the stages: inventory -> probe (raw facts) -> detect
(platform) -> plan -> build/pick -> publish (one tag) -> deploy -> verify.
"""

__version__ = "0.1.0"
