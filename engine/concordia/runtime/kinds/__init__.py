"""Each kind of step carried out by a module of its own, behind one interface.

The pass loop (:mod:`concordia.runtime.executor`) asks the planner for a decision and
hands it to the kind that carries it out (:class:`StepKind`): a ``start`` of steps goes to
the kind of each step (actions, awaits, policy checks), every other decision to the kind
that declares it (a compensation to actions; an expansion, items, a settling or an item's
undo to fan-outs; a child saga's start or undo to children; a condition or a catch to
conditions). Kinds share the services of :class:`~concordia.runtime.journaling.Journaling`
and never reach into each other or into the pass loop.

A new kind of step is a module here, registered in the executor's table; the planner
says when its decisions are due.
"""
