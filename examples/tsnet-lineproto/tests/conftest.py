"""The example's tests run against the installed distribution, as a user's
would: ``pip install './examples/tsnet-lineproto[test]'`` first."""

#: tsnet's server fixtures (``make_server``, ``serve_plugin``) for in-process tests
pytest_plugins = ["tsnet.testing.fixtures"]
