"""Local authorization lists and authorization caches, driven by the CSMS: which tokens go on a charger's
list (`policy`), what we keep of each list (`records`), syncing one (`sync`), what a changed token does
(`tokens`) and the automatic sync of the ops role (`job`)."""
