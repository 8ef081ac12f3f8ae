"""The built-in plugins: the editable surface of the meta-agent.

They are registered exactly like third-party plugins. A copy of this directory (an archived
variant, materialized) loaded with ``--plugins-dir`` replaces them, because of the marker below.
Modules here import each other only relatively, so that a copy imports its own siblings.
"""

SURFACE = "selfloop.plugins"
