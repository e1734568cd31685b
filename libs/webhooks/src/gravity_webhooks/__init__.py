"""gravity_webhooks: Standard Webhooks signing and the one delivery client fanout and registry use."""

from gravity_webhooks.client import RESPONSE_BODY_LIMIT, DeliveryClient, DeliveryResult
from gravity_webhooks.crypto import (
    DEVELOPMENT_SECRET_KEY,
    DecryptionError,
    SecretBox,
    is_development_key,
    parse_secret_keys,
)
from gravity_webhooks.retry_after import RETRY_AFTER_MAX, parse_retry_after
from gravity_webhooks.signing import (
    SignatureError,
    new_signing_secret,
    sign,
    signature_header,
    verify,
)
from gravity_webhooks.urls import (
    BlockedAddressError,
    WebhookUrlError,
    is_public_address,
    validate_webhook_url,
)

__all__ = [
    "DEVELOPMENT_SECRET_KEY",
    "RESPONSE_BODY_LIMIT",
    "RETRY_AFTER_MAX",
    "BlockedAddressError",
    "DecryptionError",
    "DeliveryClient",
    "DeliveryResult",
    "SecretBox",
    "SignatureError",
    "WebhookUrlError",
    "is_development_key",
    "is_public_address",
    "new_signing_secret",
    "parse_retry_after",
    "parse_secret_keys",
    "sign",
    "signature_header",
    "validate_webhook_url",
    "verify",
]
