"""DreamSim, reimplemented: a drop-in for the upstream ``dreamsim`` package (in progress).

Must never import ``nights``. See issue 4 for what it will provide.
"""
