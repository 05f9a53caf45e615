"""The sweeper, for any Hydra app: the study, its trials, and the launchers that run them. Nothing here imports
torch or knows the MNIST trial (sweeper/mnist/)."""
