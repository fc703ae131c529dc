#pragma once

// OpenSSL objects owned by unique_ptr, declared once.

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <memory>
#include <vector>

namespace trustfence::tls {

template <auto Free>
struct OpensslDeleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpensslDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpensslDeleter<X509_STORE_CTX_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY_free>>;

// Shares ownership of an X509 (X509_up_ref); for copying into stores.
X509Ptr share(X509* cert);

using Chain = std::vector<X509Ptr>;  // leaf first

}  // namespace trustfence::tls
