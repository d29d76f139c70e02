"""`appliance eval`: how well a model answers a golden set, and how far a quantization drifts from another."""


class EvalError(Exception):
    """The evaluation cannot go on (no daemon, a model that does not load): one readable line."""


class CaseError(Exception):
    """One case could not be answered (its prompt overflows the context, say): that case fails."""
