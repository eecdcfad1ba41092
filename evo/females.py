"""The female population: GP predictors scored by rank agreement on the archive of fully trained models.

Records are evo.ledger.Evaluation objects (any object with `key`, `features` and `target` will do;
evo.ledger.records_from_rows turns dict rows, such as a checkpoint's archive, into records)."""
from __future__ import annotations

import random

import numpy as np
from deap import algorithms, tools

from primitives.features import ARCH_FEATURES, CURVE_FEATURES, feature_matrix
from primitives.fitness import calibrate, holdout_mask, kendall_tau, paired_count, top_pick
from primitives.gp import make_pred_toolbox, tree_from_string
from primitives.pset import compile_tree, ensure_pred_types, make_pset

MIN_FIT, MIN_HOLDOUT = 3, 2
REFERENCE = "v_last"  # the last early validation loss: a strong predictor that needs no fitting
LINEAR_RIDGE = 0.1  # rule "linear": ridge penalty per curve on the standardised columns
FITNESSES = ("tau", "top")  # Config.female_fitness
CREDIT_WEIGHT = 0.1  # how much a female's record as a chooser moves her in the mating order (in tau)


class Females:
    """Population, toolbox and scoring of the predictor species (pred_*)."""

    def __init__(self, arch_features: bool = False, cxpb: float = 0.5, mutpb: float = 0.3,
                 rule: str = "reference", fitness: str = "tau", size: int = 12, picks: int = 1):
        ensure_pred_types()
        self.rule = rule
        if fitness not in FITNESSES:
            raise ValueError(f"female fitness must be one of {', '.join(FITNESSES)}, got {fitness!r}")
        # "top": the decisions' score (primitives.fitness.top_pick) over generations of `size`
        # children of which `picks` are promoted; "tau": Kendall tau
        self.fitness, self.size, self.picks = fitness, size, max(1, picks)
        self.features = tuple(CURVE_FEATURES) + (tuple(ARCH_FEATURES) if arch_features else ())
        self.pset = make_pset(self.features)
        self.toolbox = make_pred_toolbox(self.pset)
        self.cxpb, self.mutpb = cxpb, mutpb
        self.pop: list = []
        self._cache: dict[str, object] = {}
        self.archive: list = []  # what evolve() last scored on (rule "blend" refits on it)

    # -- building ---------------------------------------------------------------------------------
    def init(self, n: int) -> None:
        """n - 1 random trees (ramped half-and-half) plus the reference formula."""
        self.pop = self.toolbox.population(n - 1) + self.from_strings([REFERENCE])

    def reference(self, pop: list | None = None):
        return next((i for i in (pop if pop is not None else self.pop) if str(i) == REFERENCE), None)

    def from_strings(self, texts: list[str]) -> list:
        """Rebuild trees from text through the pset's token whitelist (never evaluates the text)."""
        from deap import creator
        return [creator.PredIndividual(tree_from_string(t, self.pset)) for t in texts]

    def compiled(self, ind):
        key = str(ind)
        if key not in self._cache:
            if len(self._cache) > 20000:
                self._cache.clear()
            self._cache[key] = compile_tree(ind, self.pset)
        return self._cache[key]

    def raw(self, ind, records: list, X: np.ndarray | None = None) -> np.ndarray:
        """Raw predictions (higher = worse final loss) for records holding a `features` dict
        (X: their feature matrix, when the caller has it already)."""
        if not records:
            return np.zeros(0)
        if X is None:
            X = feature_matrix([r.features for r in records], self.features)
        return self.compiled(ind)(X)

    # -- scoring ----------------------------------------------------------------------------------
    def split(self, archive: list) -> np.ndarray:
        """Holdout mask over the archive (stable per key); all-fit while the archive is too small."""
        mask = holdout_mask([r.key for r in archive])
        if mask.sum() < MIN_HOLDOUT or (~mask).sum() < MIN_FIT:
            return np.zeros(len(archive), dtype=bool)
        return mask

    def agreement(self, pred, target) -> float:
        """The fitness measure on one part of the archive: Kendall tau ("tau"), or how good the
        formula's promotion picks are ("top", primitives.fitness.top_pick); both in [-1, 1]."""
        if self.fitness == "top":
            return top_pick(pred, target, self.size, self.picks)
        return kendall_tau(pred, target)

    def score(self, pop: list, archive: list) -> None:
        """fitness = (agreement on the archive's fit part, tree size): Kendall tau by default, the
        decisions' score with fitness "top"; the same measure on the holdout part kept aside
        (`holdout_tau`, whatever the measure), with the number of held-out architectures it ranks
        (`holdout_n`, 0 when the archive is too small to hold any out)."""
        y = np.array([r.target for r in archive])
        mask = self.split(archive)
        X = feature_matrix([r.features for r in archive], self.features) if archive else None
        for ind in pop:
            p = self.raw(ind, archive, X)
            ind.fitness.values = (self.agreement(p[~mask], y[~mask]), len(ind))
            ind.holdout_tau = self.agreement(p[mask], y[mask]) if mask.any() else float("nan")
            ind.holdout_n = paired_count(p[mask], y[mask]) if mask.any() else 0

    @staticmethod
    def ranked(pop: list) -> list:
        """Best first: higher fit tau, then smaller tree, then text (deterministic)."""
        return sorted(pop, key=lambda i: (-i.fitness.values[0], i.fitness.values[1], str(i)))

    @staticmethod
    def mating_order(ranked: list, credit: dict[str, list[float]], weight: float = CREDIT_WEIGHT) -> list:
        """The order in which females pair: fit tau plus `weight` x (mean credit - 0.5), where a
        female's credit is the fraction of the archive that each of her fully trained children beat
        (no record: no bonus). A female whose choices turned out well mates first and more often."""
        def merit(i):
            c = credit.get(str(i))
            return i.fitness.values[0] + (weight * (float(np.mean(c)) - 0.5) if c else 0.0)
        return sorted(ranked, key=lambda i: (-merit(i), i.fitness.values[1], str(i)))

    def champion(self, top: int = 5):
        """The formula that ranks children, by `self.rule` (Config.champion). "reference" (the
        default): the reference (v_last) unless one of the top females by archive tau beats it on
        both the fit and the held-out parts; then the best of those held out.

        Archives are small (tens of architectures), so a formula picked among thousands by its fit
        tau is mostly lucky; a strong default that must be beaten on unseen data makes promotion
        fall back to ranking by the early validation loss unless the evidence says otherwise.
        The ablations: "fit", the best by fit tau; "holdout", the best held out of the top; "blend"
        and "linear", the reference rule's champion or a challenger built from her (_challenged)."""
        ranked = self.ranked(self.pop)[:top]
        if self.rule in ("blend", "linear"):
            return self._challenged(self._by_reference(ranked), top)
        if self.rule == "holdout" and any(i.holdout_tau == i.holdout_tau for i in ranked):
            return sorted(ranked, key=lambda i: (-(i.holdout_tau if i.holdout_tau == i.holdout_tau else -2),
                                                 -i.fitness.values[0], i.fitness.values[1], str(i)))[0]
        return self._by_reference(ranked) if self.rule == "reference" else ranked[0]

    def _by_reference(self, ranked: list):
        """The reference rule over the top females `ranked` (see champion)."""
        ref = self.reference()
        if ref is None:
            return ranked[0]
        rf, rh = ref.fitness.values[0], getattr(ref, "holdout_tau", float("nan"))
        better = [i for i in ranked if i.fitness.values[0] > rf and i.holdout_tau > rh]  # NaN: none
        if not better:
            return ref
        return sorted(better, key=lambda i: (-i.holdout_tau, -i.fitness.values[0], i.fitness.values[1], str(i)))[0]

    def _challenged(self, champ, top: int):
        """The champion, or a challenger where it beats her on both the fit and the held-out parts
        of the archive the females last evolved on (primitives.ensemble.choose: the rule evo.fit
        uses too). "blend": a non-negative least-squares blend of the top formulas; "linear": her
        output plus a least-squares weight per architecture feature."""
        from primitives.ensemble import choose

        linear = (lambda c, mask: self._linear(c, self.archive, ~mask)) if self.rule == "linear" else None
        out = choose(self, self.archive, "nnls", top, champ=champ, candidate=linear)
        if not out["is_blend"]:
            return champ
        tree, (bf, bh) = out["tree"], out["scores"]["blend"]
        tree.fitness.values, tree.holdout_tau = (bf, len(tree)), bh
        mask = self.split(self.archive)
        y = np.array([r.target for r in self.archive])
        tree.holdout_n = paired_count(self.raw(tree, self.archive)[mask], y[mask])
        return tree

    def _linear(self, champ, archive: list, fit: np.ndarray) -> dict | None:
        """The champion's calibrated output plus a weight on each architecture feature, by ridge
        least squares on the fit part (None without architecture features)."""
        from primitives.ensemble import const_text

        arch = [n for n in ARCH_FEATURES if n in self.features]
        if not arch or fit.sum() < len(arch) + 3:
            return None
        X = feature_matrix([r.features for r in archive], self.features)
        P = np.column_stack([self.raw(champ, archive, X)] + [X[:, self.features.index(n)] for n in arch])
        y = np.array([r.target for r in archive], dtype=float)
        if not np.isfinite(P[fit]).all():
            return None
        mu, sd = P[fit].mean(0), P[fit].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        Z = (P[fit] - mu) / sd
        w = np.linalg.solve(Z.T @ Z + LINEAR_RIDGE * len(Z) * np.eye(Z.shape[1]), Z.T @ (y[fit] - y[fit].mean())) / sd
        text = const_text(float(y[fit].mean() - w @ mu))
        for t, x in zip([str(champ)] + arch, w):
            text = f"add(mul({const_text(float(x))}, {t}), {text})"
        return {"tree": self.from_strings([text])[0]}

    def truncate(self, pop: list, mu: int) -> list:
        """(mu + lambda) replacement: the best mu distinct formulas; the reference always stays."""
        ref = self.reference(pop)
        seen, out = ({REFERENCE}, [ref]) if ref is not None else (set(), [])
        for ind in self.ranked(pop):
            if str(ind) not in seen:
                seen.add(str(ind))
                out.append(ind)
            if len(out) == mu:
                break
        return out

    def evolve(self, archive: list, steps: int, mu: int) -> None:
        """Run `steps` GP generations on the archive: tournament, varAnd, truncation."""
        self.archive = archive
        self.score(self.pop, archive)
        for _ in range(steps):
            parents = tools.selTournament(self.pop, len(self.pop), tournsize=3)
            kids = algorithms.varAnd(parents, self.toolbox, self.cxpb, self.mutpb)
            self.score(kids, archive)
            self.pop = self.truncate(self.pop + kids, mu)

    def child(self, mother, partner):
        """A predictor child of a female and a partner female: one-point crossover, then mutation."""
        a, b = self.toolbox.clone(mother), self.toolbox.clone(partner)
        if random.random() < 0.9:
            a, b = self.toolbox.mate(a, b)
        if random.random() < 0.5:
            (a,) = self.toolbox.mutate(a)
        del a.fitness.values
        return a

    def predict_losses(self, ind, archive: list, records: list) -> np.ndarray:
        """Predictions shown as losses: an affine map fitted on the archive (ranking unchanged if a > 0)."""
        a, b = calibrate(self.raw(ind, archive), np.array([r.target for r in archive]))
        return a * self.raw(ind, records) + b
