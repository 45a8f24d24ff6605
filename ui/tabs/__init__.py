"""One module per tab of the app: its handlers (a mixin of :class:`ui.state.State`) and its
layout (widgets wired to those handlers)."""
