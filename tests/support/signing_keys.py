"""Makes the keys and certificates the signing tests sign models with (the signatures themselves
are made by the real `model_signing` CLI): python3 signing_keys.py DIR

  p256.key/.pub, p384.key/.pub, other.key/.pub   ECDSA keys (PEM; .pub is SubjectPublicKeyInfo)
  ca.key/ca.pem, leaf.key/leaf.pem                a CA and a code-signing leaf it issued
                                                  (SAN email ml-team@example.com)
  rogue_ca.key/rogue_ca.pem, rogue_leaf.key/.pem  the same shape under a CA nobody trusts
"""

import datetime
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write_key(path, key):
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def certificate(subject, key, issuer, issuer_key, ca, email=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        ).add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def write_chain(out, prefix, email):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(f"{prefix}modelpipe test CA", ca_key, None, None, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(
        f"{prefix}signer", leaf_key, ca.subject, ca_key, ca=False, email=email
    )
    for name, key, cert in [(f"{prefix}ca", ca_key, ca), (f"{prefix}leaf", leaf_key, leaf)]:
        write_key(out / name, key)
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_key(out / "p256", ec.generate_private_key(ec.SECP256R1()))
    write_key(out / "p384", ec.generate_private_key(ec.SECP384R1()))
    write_key(out / "other", ec.generate_private_key(ec.SECP256R1()))
    write_chain(out, "", "ml-team@example.com")
    write_chain(out, "rogue_", "ml-team@example.com")


if __name__ == "__main__":
    main()
