"""The male (architecture) DEAP types, created once in one guarded place."""
from deap import base, creator


def ensure_creator_types() -> None:
    """Create the male fitness/individual classes unless they exist (re-imports stay quiet)."""
    if not hasattr(creator, "ArchFitness"):
        # (early val loss, predicted-or-true best val loss): both minimised; male mode uses the first only
        creator.create("ArchFitness", base.Fitness, weights=(-1.0, -1.0))
    if not hasattr(creator, "ArchIndividual"):
        creator.create("ArchIndividual", list, fitness=creator.ArchFitness)


ensure_creator_types()
