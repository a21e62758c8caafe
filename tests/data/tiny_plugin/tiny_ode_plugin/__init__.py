"""Declarations only: no torch here, so the API can list them (anode_lab.plugins)."""

from anode_lab.plugins import DatasetPlugin, ModelPlugin

MODEL = ModelPlugin(
    description="tiny ODE classifier written the torchdiffeq way (one odesolve per forward)",
    build="tiny_ode_plugin.model:build",
    data=("points",),
)
XOR = DatasetPlugin(
    description="XOR quadrants: the sign of x·y, 2-D points",
    load="tiny_ode_plugin.data:load",
    shape=(2,),
    classes=2,
    examples=150,
)
