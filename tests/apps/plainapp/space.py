"""custom_search_space for the plain app: a param the config does not have."""


def extend(cfg, trial):
    trial.suggest_float("z", 0.0, 1.0)


def broken(cfg, trial):
    """A custom_search_space with a bug that shows from the third trial on (tests/test_storage_blinks.py)."""
    if trial.number >= 2:
        raise KeyError("z")
    trial.suggest_float("z", 0.0, 1.0)
