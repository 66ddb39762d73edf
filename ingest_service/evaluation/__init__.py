"""Offline evaluation of selection strategies in a closed loop (centre side only).

A labeled stream is replayed in order; each strategy sees, at every frame, the class
probabilities of the model currently in force, exactly as a vehicle would. When it selects,
the ground-truth label is taken, the model is refit every few labels, and the following frames
are scored by the refitted model. The model is scored on a fixed holdout that is never trained
on. See docs/evaluation.md.

Modules, one job each: :mod:`.streams` (labeled streams), :mod:`.learners` (the model that is
refit), :mod:`.strategies` (our selectors and scikit-activeml's peers behind one interface),
:mod:`.loop` (the closed loop), :mod:`.metrics` (figures of one run and of several seeds),
:mod:`.report` (Markdown, JSON and plots), :mod:`.cli` (``fleetal-evaluate``).

This package uses scikit-learn and scikit-activeml (the ``evaluate`` extra); nothing under
``edge_agent/`` may import it.
"""
