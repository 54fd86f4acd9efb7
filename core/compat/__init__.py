"""Drop-in facades for other libraries' APIs (:mod:`neardup.compat.dnikit`)."""
