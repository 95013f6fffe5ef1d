"""The journal on SQL, written once (:mod:`.journal`, laying records out as :mod:`.rows`
says and translating a patch's guards with :mod:`.guards`), over a dialect per database
(:mod:`.sqlite`, :mod:`.postgres`: what :mod:`.dialect` asks of one)."""
