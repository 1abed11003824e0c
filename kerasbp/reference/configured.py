"""`Configured`: the repr, equality and hash of an object defined by its `get_config()`."""


class Configured:
    """Mixin for objects defined by their constructor's arguments, as Keras objects are by
    `get_config()`: `Name(arg=value, ...)` as repr, equal when of the same class and config,
    and hashable (by class and config keys, so that equal objects hash alike even where a
    value is a list)."""

    def get_config(self):
        """The constructor's keyword arguments, a dict. Subclasses define it."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self), tuple(self.get_config())))
