"""sensors_sim: seeded simulators and replayers of Thurrock roadside sensor feeds."""

__all__: list[str] = []
