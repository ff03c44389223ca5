"""Participant identity: keys, DIDs, Data Integrity proofs and the signed self-description; and what others
vouch for: Verifiable Credentials about participants and presentations of them (``vc``, kinds of claim in
``claims``), revocation by Bitstring Status List (``status_list``), and which issuers a node believes
(``trust``)."""
