"""The local-process driver (SPEC 8): each instance of a set is a real server process on this
machine, running the program of the image its OS directory was made from, probed over real
sockets as the Application Health extension and load-balancer probes do (R-H-2).

    images.py   the local image store: one directory per image version, and OS directories
                made from them
    program.py  the program an image runs (stdlib only: it starts hundreds of times)
    probe.py    HTTP/HTTPS/TCP probes, async, and the R-H-2 state machine per instance
    driver.py   the driver: plans of steps on the instance rows, carried out by short tasks,
                and the probe round
"""
