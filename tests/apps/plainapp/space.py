"""custom_search_space for the plain app: a param the config does not have."""


def extend(cfg, trial):
    trial.suggest_float("z", 0.0, 1.0)
