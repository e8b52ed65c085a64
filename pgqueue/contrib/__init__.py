"""Integrations with web frameworks and other libraries, each an optional extra.

The engine never imports anything here, and nothing here is imported by `import pgqueue`:
each module imports its framework, which only its extra installs.
"""
