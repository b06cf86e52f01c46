"""Shared plumbing for every app: data, distribution, training, export, plots, errors.

Modules are imported on their own (`from core import data`) so that light
commands do not pay for TensorFlow's start-up when they do not need it.
"""
