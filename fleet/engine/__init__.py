"""A device's Docker engine: typed state parsed from the engine's JSON
(:mod:`fleet.engine.state`) and the ways to drive it over the device's SSH connection."""

from fleet.engine.state import *  # noqa: F401,F403
from fleet.engine.state import __all__  # noqa: F401
