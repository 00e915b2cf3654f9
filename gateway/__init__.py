"""ztbridge core: everything that does not speak DICOM networking or HTTP.

The SCP, the portal, the CLI and the tests all drive this package; it never imports them.
"""

__version__ = "0.1.0"
