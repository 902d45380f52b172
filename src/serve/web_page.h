// The page `uneven serve` answers GET / with: a streaming chat box and a live view of the cluster.
#pragma once

namespace uneven::serve {

// The whole page (HTML, CSS and JS in one document, no external resources), embedded in the binary.
const char* web_page_html();

}  // namespace uneven::serve
